"""Imported by multiprocessing's forkserver when the local engine starts it (``set_forkserver_preload``), and by
nothing else: the forkserver dies with the process that started it (see :mod:`.orphans`)."""

from .orphans import die_with_parent

die_with_parent()
