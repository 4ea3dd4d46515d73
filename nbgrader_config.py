"""nbgrader's course configuration: the repository is the course directory.

Instructors keep the nbgrader *source* notebooks (answers, visible and hidden tests) in `solutions/`
and `make labs` writes the student versions to `labs/` (`nbgrader generate_assignment LAB`).
Grading runs in a separate workspace (`gpt-lab grade`), which points `CourseDirectory.root` and
`CourseDirectory.db_url` elsewhere on the command line, so nothing here is graded in place.
"""
import os

c = get_config()  # noqa: F821 (injected by nbgrader)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "gpt-from-scratch"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
# The gradebook (cell checksums of the released notebooks) defaults to <root>/gradebook.db (gitignored).
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# `nbgrader autograde` runs each notebook in a kernel: a lab's training cell may take minutes on a laptop CPU.
c.Execute.timeout = 300
