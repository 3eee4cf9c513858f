"""pytest runs the solution sources of labs/source/ through nbval; the course state that nbgrader writes beside them
(student versions, submissions, autograded and feedback copies) is not collected."""

collect_ignore = ["release", "submitted", "autograded", "feedback"]
