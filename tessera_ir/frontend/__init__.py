"""Torch front end: traces a torch.nn.Module into high-level IR."""
