"""PingPong v2 (arXiv:2409.06820): role-play dialogues with a simulated user, judged per turn."""
