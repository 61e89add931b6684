"""Callbacks that record a framework's training as an lsml-tui run, as ``lsml_tui.watch``
does for a plain loop: ``lightning.LsmlTuiCallback`` (Lightning's ``Trainer``) and
``transformers.LsmlTuiCallback`` (Hugging Face's ``Trainer``). Each is an optional extra
(``pip install 'lsml-tui[lightning]'``, ``'lsml-tui[transformers]'``) and says so when
its framework is missing.

May import ``lsml_tui.trainer.watch`` and the framework; nothing else of lsml-tui.
"""
