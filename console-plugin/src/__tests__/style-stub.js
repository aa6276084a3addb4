// PatternFly's CommonJS components require their CSS; jsdom needs none (the console provides the styles).
module.exports = {};
