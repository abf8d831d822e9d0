"""bertkit: train BERT-style encoders from the command line, offline."""

__version__ = "0.1.0"
