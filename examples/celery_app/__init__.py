"""A Starlette app whose background tasks run on Celery workers (see docs/scaling.md).

Start Redis, then, from the repository root, in two terminals:

    celery -A examples.celery_app.worker worker --loglevel=INFO
    uvicorn examples.celery_app.web:app

and sign someone up:

    curl -X POST localhost:8000/signup -H 'content-type: application/json' \
        -d '{"email": "ada@example.com", "plan": "pro"}'

The worker's log shows the welcome email and the CRM update. `REDIS_URL` (default
`redis://127.0.0.1:6379/0`) points both processes at another Redis.
"""
