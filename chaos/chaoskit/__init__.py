"""hubbub's chaos suite: faults against a running cluster, a verifier that
judges the outcome from the clients' side, and a verdict (chaos/README.md)."""
