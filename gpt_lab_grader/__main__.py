"""`python -m gpt_lab_grader` = `gpt-lab-grade`."""
import sys

from gpt_lab_grader.cli import main

sys.exit(main())
