"""gpt_lab: the code of the course "GPT from scratch", shared by the book, the labs and the grader.

One module per idea: `tokenizer`, `data`, `device`, `attention`, `model`, `kv_cache`, `train`,
`presets`, `decoding`, `prompting`, `sft`, `viz`, `widgets`, `cli`, `selfcheck` (the grader is an instructors'
package of its own, not part of gpt_lab).
"""
__version__ = "0.1.0"
