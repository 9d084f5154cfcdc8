"""`partaware explore`: one self-contained HTML page per dataset with a dense store, where a
click on any point of any image shows, for every encoder side by side, the cosine-similarity
heat map on the other images (computed in the page from the stored tokens), a PCA-to-RGB view
of each encoder's tokens and, for part datasets, a query patch's nearest neighbours.

`plan` picks the datasets and stores, `export` turns store rows into the page's float16 token
blocks under a size cap, `views` makes the image and PCA tiles, `part_neighbours` runs the
project's neighbour search, `page` writes the HTML (`page.html`, `page.js`, `page.css`).
"""
