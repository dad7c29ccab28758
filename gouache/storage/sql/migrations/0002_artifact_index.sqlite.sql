-- Which generated image an artifact shows, carried from the engine (never parsed from names).
ALTER TABLE artifacts ADD COLUMN image_index INTEGER;
