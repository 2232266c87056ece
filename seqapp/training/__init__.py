"""What every task's training shares: starting from pretrained weights, and the run folder."""
