"""Small data files shipped with facecut (see NOTICE for their origin)."""
