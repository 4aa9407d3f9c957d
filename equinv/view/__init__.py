"""``equinv view``: a self-contained static page to look at a representation.

* :mod:`~equinv.view.descriptors` computes descriptors and part maps (the only caller of the descriptor API);
* :mod:`~equinv.view.codec` reduces (PCA), quantises and encodes them, and reads them back;
* :mod:`~equinv.view.correspondence` and :mod:`~equinv.view.predictions` build the page's data;
* :mod:`~equinv.view.page` writes ``index.html``, its scripts and data files;
* :mod:`~equinv.view.serve` serves a page on 127.0.0.1; :mod:`~equinv.view.browser` drives headless Chromium.
"""
