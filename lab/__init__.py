"""The lab: the marketplace simulator (a family of worlds with known truth) and the closed-loop evaluation.
It may import the platform; the platform in production never imports it."""
