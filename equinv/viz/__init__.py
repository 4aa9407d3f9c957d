"""Visual checks: contact sheets of samples and augmented batches with their landmarks."""
