"""`python -m streaming [--broker redis|nats]`: the stream consumer process, settings from the environment."""

from streaming.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
