"""ccsa: feeds ClusterCockpit's cc-backend with Slurm job information in real time."""

__version__ = "0.1.0"
