"""Running experiments: on a Flower grid, in a Ray simulation, and writing their results."""
