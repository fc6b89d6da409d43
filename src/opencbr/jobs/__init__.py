"""Task-queue adapter (Huey): each task loads ids and calls one service function.

The database row is the truth; the queue only wakes workers. May import services and below.
"""
