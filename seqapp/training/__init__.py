"""What every task's training shares: starting from pretrained weights, batch norm statistics
re-estimated after each epoch, and the run folder."""
