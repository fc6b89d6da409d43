"""HTTP layer: FastAPI routers per feature (routes/), wire models (schemas/), request
dependencies (deps.py) and the one place where errors become responses (errors.py).
May import everything below it; nothing imports it but app.py.
"""
