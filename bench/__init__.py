"""Benchmarks: Batchfetch end to end next to the bare asyncio scripts (`make bench`)."""
