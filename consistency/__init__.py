"""The skew checker: offline vs online values, distributions, batch vs live parity (`checker.run_skew_check`)."""
