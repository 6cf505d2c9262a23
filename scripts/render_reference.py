"""Write the reference documents (docs/reference/*.zh.html) from their templates and examples
(tasks.reference). Run after changing one of those templates; tests/test_reference_documents.py
fails until the seeds match the templates again."""

from __future__ import annotations

from tasks.reference import write_seeds

print("written:", *(p.name for p in write_seeds()))
