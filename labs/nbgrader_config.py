"""nbgrader configuration of the diffu labs. This folder is the course root: run nbgrader from here (or through
``python labs/grade.py``, see README.md). Only the offline steps are used — generate_assignment and autograde —
so no exchange directory is configured."""

import os

c = get_config()  # noqa: F821 (traitlets provides get_config when nbgrader loads this file)

ROOT = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "diffu"
c.CourseDirectory.root = ROOT
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "gradebook.db")  # kept out of git (.gitignore)
c.Execute.timeout = 300  # seconds per cell while autograding (nbgrader's default, 30 s, is short for a laptop CPU)
