"""Run the nst-batch command line: `python nst_batch.py --help`."""
from pipeline.cli import main

if __name__ == "__main__":
    main()
