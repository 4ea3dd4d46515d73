"""Tests of the labs in both forms and of the grader's machinery (the hidden checks themselves live in
gpt_lab_grader/labs/<lab>/checks.py and are reached through tests/grader.py)."""
