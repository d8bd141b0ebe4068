"""Client-side logic of each method: local objectives, training loops, private state."""
