"""``python -m facecut`` and the installed ``facecut`` command.

The CLI (click, rich, PyAV...) is imported when :func:`main` runs, not when this
module is: with ``spawn`` (every platform here) each decoder and inference
process runs the launching script again, and the script imports only this.
"""


def main():
    from facecut.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    main()
