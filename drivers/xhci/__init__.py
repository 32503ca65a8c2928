"""xHCI layouts (construct), derived fast codecs, rings."""
