"""The Litestar prediction API: blends stored batch scores with live re-scoring (issue 4 fills it)."""
