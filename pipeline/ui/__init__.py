"""What people look at: the live viewer and the evaluation plots (matplotlib)."""
