"""The skew checker: offline vs online values, distributions, batch vs live parity (issue 5 fills it)."""
