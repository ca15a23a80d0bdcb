"""The request handlers, one module per resource of distribution's API (as its
``registry/handlers``): :mod:`~.base` (what they share, and ``/v2/``), :mod:`~.catalog`,
:mod:`~.blobs`, :mod:`~.uploads`, :mod:`~.manifests`, :mod:`~.tags` and :mod:`~.referrers`.
Each offers ``resources(context)``: its routes and the handler of each method they take."""
