"""The HTTP face (`gpushop serve`): FastAPI over the service layer; parse, call, render JSON."""
