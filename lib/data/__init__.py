"""Data: the DfT files, their codes and schema eras, validation, the curated table and the lake."""
