"""Fixtures of the §7 distillation tests (tiny networks from :mod:`tests.distill.nets`)."""

from __future__ import annotations

import pytest

from diffu.nn.student import StudentUNet
from diffu.schedules import linear_schedule

from .nets import tiny_unet


@pytest.fixture
def schedule():
    return linear_schedule(100)


@pytest.fixture
def teacher():
    return tiny_unet(0).requires_grad_(False)


@pytest.fixture
def student(teacher):
    return StudentUNet.from_teacher(teacher, T=100)
