"""The user-background-images service suite: one package per deployable."""
