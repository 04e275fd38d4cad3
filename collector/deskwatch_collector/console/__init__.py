"""The supervisor console and the worker's page: queues, event detail, review, accuracy, fleet.

Server-rendered pages (Jinja2, autoescaped) that work without script, progressively
enhanced by one static script (keyboard review, live alerts, local sorting). Every page
has a JSON twin under ``/api`` built from the same query functions.

- :mod:`.schema`: the console's additions to the collector database (migration).
- :mod:`.vocab`: rule labels, review states and the short list of dismiss reasons.
- :mod:`.timefmt`: the viewer's time zone and how times are printed.
- :mod:`.queue`: filters, keyset cursors, a page of events, counts per filter, CSV.
- :mod:`.detail`: one event with its scan, its device's recent history and review trail.
- :mod:`.review`: acknowledge, dismiss, reopen and contest, each leaving a trail row.
- :mod:`.accuracy`: how often each rule is upheld or dismissed as wrong; noisy rules.
- :mod:`.fleet`: device state with its reasons; the device page.
- :mod:`.worker`: a worker's own findings and how long their pictures are kept.
- :mod:`.view`: what every route shares; :mod:`.queue_pages`, :mod:`.report_pages`: the
  routes; :mod:`.routes`: the list handed to the web server; :mod:`.charts`: inline SVG.

Templates are in ``templates/``; the script and stylesheet are the package's
``static/console.js`` and ``static/console.css``.
"""
