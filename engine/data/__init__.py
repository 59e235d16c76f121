"""Small data files shipped with facecut (see NOTICE for their origin): the mean face
shape, the report's style sheet and script."""
