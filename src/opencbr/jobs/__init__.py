"""Task-queue adapter (Huey): `tasks.py` holds the tasks, one module-level function per use
case (each loads ids and calls one service function); `queue.py` runs them.

The database row is the truth; the queue only wakes workers. May import services and below.
"""
