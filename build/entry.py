"""The frozen executable's entry point: the same `main` as the `ollamalike` console script."""

from ollamalike.cli.app import main

if __name__ == "__main__":
    main()
