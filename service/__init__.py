"""The REST control service and the operator's web page (FastAPI + uvicorn).

``service.app.create_app(settings)`` builds the app; ``autofocus serve`` runs it. See docs/service.md.
"""
