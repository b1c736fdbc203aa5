"""`python -m scheduler [--jobs a,b]`: the scheduler process, settings from the environment."""

from scheduler.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
