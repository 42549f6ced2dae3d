"""The CLI as a client of a team service (`gpushop serve`): where the server and the token come
from (``session``), a thin HTTP client that maps the service's error bodies to gpushop's typed
errors (``http``), and the calls each command makes, answering with the same data the local
commands render (``remote``; the job commands': ``jobs``)."""
