"""Method losses: small composable modules."""
