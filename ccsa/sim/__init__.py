"""ccsa's simulated surroundings: a stand-in cc-backend and a simulated Slurm cluster."""
