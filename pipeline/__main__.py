"""`python -m pipeline`: archive the receiver's Pub/Sub messages (see --help)."""

from pipeline.launcher import main

if __name__ == "__main__":
    main()
