"""Evaluation: the paper's metrics (§4), causal zero-order hold, tables, plots, peers."""
