"""Runner: the simulated clock, the notebook executor, its archive and the simulation loop."""
