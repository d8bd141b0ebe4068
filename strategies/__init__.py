"""Server-side Flower strategies of each method (Message API), usable in any ServerApp."""
