"""Losses as plain functions of tensors: InfoNCE, the equivariance losses (reference and paper), DVE."""
