"""Development tools of the repository (not shipped in the wheel): the local stack."""
